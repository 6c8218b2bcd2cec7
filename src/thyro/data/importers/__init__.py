"""thyro.data.importers"""

"""thyro.stats"""

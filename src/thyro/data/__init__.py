"""thyro.data"""

"""thyro.use"""

"""thyro.train"""

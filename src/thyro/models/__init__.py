"""thyro.models"""

"""thyro.models.weights"""

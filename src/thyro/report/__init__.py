"""thyro.report"""

"""sarra.plugins"""

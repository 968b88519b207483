"""sarra.flow"""

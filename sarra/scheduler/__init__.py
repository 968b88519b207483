"""sarra.scheduler"""

"""mailyard.smtp_ingress"""

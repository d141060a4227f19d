"""mailyard.remote_delivery"""

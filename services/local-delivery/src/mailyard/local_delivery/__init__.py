"""mailyard.local_delivery"""

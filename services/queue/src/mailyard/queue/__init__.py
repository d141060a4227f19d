"""mailyard.queue"""

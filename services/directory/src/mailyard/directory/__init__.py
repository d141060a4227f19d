"""mailyard.directory"""

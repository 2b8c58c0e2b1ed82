"""_present"""

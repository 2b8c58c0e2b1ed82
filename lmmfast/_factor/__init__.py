"""_factor"""

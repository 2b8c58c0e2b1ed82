"""_sources"""

"""_inference"""

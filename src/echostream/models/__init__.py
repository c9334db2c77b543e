"""echostream.models"""

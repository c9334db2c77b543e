"""echostream.streaming"""

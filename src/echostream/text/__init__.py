"""echostream.text"""

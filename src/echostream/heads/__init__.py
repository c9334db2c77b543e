"""echostream.heads"""

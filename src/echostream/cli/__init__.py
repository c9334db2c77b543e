"""echostream.cli"""

"""echostream.encoders"""

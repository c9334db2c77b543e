"""echostream: streaming and long-form speech recognition."""

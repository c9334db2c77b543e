"""Training data: utterance manifests (``manifest``) and corpus synthesis with TTS engines (``synth``)."""

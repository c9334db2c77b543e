"""Output heads: CTC (``ctc``), the attention decoder (``attention_decoder``), the training
losses (``losses``) and the decoding strategies (``search``)."""

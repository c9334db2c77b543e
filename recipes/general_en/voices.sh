# Voices of the general English model (recipes/general_en), sourced by its run.sh and by
# recipes/callbot (which fine-tunes that model and tests on the voices it never heard).
# Training never uses festival, any slt voice (CMU ARCTIC, evaluation only in every engine), or
# the held-out variants.
TRAIN_VOICES='espeak:*+m[1-5],espeak:*+f[1-3],mbrola:mb-us1,mbrola:mb-us2,mbrola:mb-en1,flite:kal,flite:kal16,flite:awb,rhvoice:alan,rhvoice:bdl,pico:en-US,piper:joe,hibari:heart'
NEW_VOICES='espeak:*+m[67],espeak:*+f4,mbrola:mb-us3,flite:rms,rhvoice:clb,pico:en-GB'  # new voices of the training engines
EVAL_VOICES='festival'  # an engine never trained on

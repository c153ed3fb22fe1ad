"""Stage 1, the data: CSV table and schema -> saved, verified split -> decoded image cache -> the three composed (``dataset``); batched augmentations; the synthetic demo data.
"""

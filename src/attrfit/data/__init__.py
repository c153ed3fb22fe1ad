"""The data path: the CSV table and its schema -> the saved, verified split -> the decoded image cache, composed in
``load``; the crop rule training and box prediction share; batched augmentations; the demo data; the public
datasets' readers (``formats``); a tracker's boxes and the frames they refer to.
"""

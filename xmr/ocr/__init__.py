"""Text in pixels: OCR of images and of scanned PDF pages (see docs/ocr.md).

``xmr.ocr.engine`` reads an image (RapidOCR, imported lazily); ``xmr.ocr.gate`` decides
cheaply whether an image likely holds text (``--ocr auto``).
"""

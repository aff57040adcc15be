"""Render the plate test pictures: a car's rear with a white plate in DejaVu Sans Mono Bold
(fonts-dejavu-core). Our own drawings; run from the repository root with Pillow installed."""
from PIL import Image, ImageDraw, ImageFont
import numpy as np
font = ImageFont.truetype('/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf', 38)
def scene(text, path, plate_xy=(220, 300)):
    im = Image.new('RGB', (640, 480), (70, 80, 90))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((120, 150, 520, 400), 30, fill=(150, 20, 25))      # the car's rear
    x, y = plate_xy
    d.rectangle((x, y, x + 232, y + 54), fill=(245, 245, 240), outline=(20, 20, 20), width=3)
    d.text((x + 12, y + 6), text, font=font, fill=(15, 15, 15))
    im.save(path)
scene('AB 123 CD', 'tests/data/plates/car_AB123CD.png')
scene('XY 987 ZW', 'tests/data/plates/car_XY987ZW.png')

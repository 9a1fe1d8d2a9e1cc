"""A small file to try Cromwell's code actions on (it parses, so every action is offered):

    cromwell edit examples/demo/geometry.py --action body --line 10
    cromwell edit examples/demo/geometry.py --action docstring --line 14
"""
import math


def rectangle_area(width, height):
    """Area of a width x height rectangle."""


def circle_area(radius):
    return math.pi * radius ** 2

"""A small file to try Cromwell on: `cromwell complete examples/demo/shapes.py:15:5`."""
import math


def circle_area(radius):
    """Area of a circle of the given radius."""
    return math.pi * radius ** 2


def rectangle_area(width, height):
    """Area of a width x height rectangle."""


def total_area(shapes):
    

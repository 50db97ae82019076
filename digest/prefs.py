"""stub"""

from flask import Blueprint

pages = Blueprint("prefs", __name__)

"""stub"""

from flask import Blueprint

pages = Blueprint("signup", __name__)

"""Tortoise models, one module per domain; migrations/ holds Tortoise's own migrations."""

from models.crm import Account, AccountContact, AccountEmail, AccountType, Contact, EmailAddress
from models.firms import Firm, Session, SignInThrottle, StaffMember, StaffRole

__all__ = [
    "Account",
    "AccountContact",
    "AccountEmail",
    "AccountType",
    "Contact",
    "EmailAddress",
    "Firm",
    "Session",
    "SignInThrottle",
    "StaffMember",
    "StaffRole",
]

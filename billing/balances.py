"""Where balances live: for now, on the user and key rows; the one module of billing that says so.

Decision (issue 7, taken before reseller sub-keys): balances move into tables billing owns,
one row per user (its balance, spent, calls) and one per key (its allowance, spent, last use),
each keyed by its owner's id, in one migration at the start of the sub-keys work. Until then
they stay where they are (``accounts.User.quota``, ``used_quota``, ``request_count``;
``accounts.ApiKey.remaining_quota``, ``used_quota``, ``last_used_at``), guarded by
``accounts.models.KeepsMoneyFields``. Why move, rather than give ``ApiKey`` a "carved" flag:

- A carved sub-key is money a reseller handed to a customer, not a limit on the reseller's
  own balance. As a billing row it is a balance like any other (placed, settled and reconciled
  the same way, protected from deletion with money in it); as a column of a key it would be
  money that disappears, without a ledger row, when someone deletes the key.
- Identity flows move money: sign-up grants trial credit, an invite earns a reward, a key is
  created with an allowance, a reseller carves a sub-key. With balances in billing's tables,
  accounts calls billing and billing needs nothing from accounts, so the dependency runs one
  way. With balances on accounts' rows, billing must write accounts' columns while accounts
  calls billing: the cycle this issue removes.
- The hot path keeps its shape and gets lighter: a batch still locks one row per user and one
  per key, found by the ids the relay already has (the owner's id is the key), but it rewrites
  a narrow row instead of the whole user row (password hash, names, email) on every call, and
  its row locks no longer wait on, or hold up, a login or an admin save of the same user.
- ``KeepsMoneyFields`` exists only because money sits in rows that other code saves; it goes.

What the decision requires now, and is done: the arrow. accounts imports billing (key
creation sets an allowance through ``billing.services``); billing imports nothing from
accounts, and reaches today's balance columns through its own foreign keys, here, so the move
replaces this module and the SQL table names below, nothing else in billing.
"""

from typing import TYPE_CHECKING

from billing.models import Hold

if TYPE_CHECKING:  # what the type checker sees; at run time, the models billing's keys point at
    from accounts.models import ApiKey, User
else:
    User = Hold._meta.get_field("user").related_model
    ApiKey = Hold._meta.get_field("api_key").related_model

USER_TABLE: str = User._meta.db_table  # quota, used_quota, request_count
KEY_TABLE: str = ApiKey._meta.db_table  # remaining_quota, used_quota, last_used_at

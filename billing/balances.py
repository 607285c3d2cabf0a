"""Where balances live, and the decision to move them before reseller sub-keys arrive.

Decision (issue 7): balances move into tables billing owns, one row per user (balance, spent,
calls) and one per key (allowance, spent, last use), each keyed by its owner's id, in one
migration at the start of the sub-keys work. A carved sub-key's holds then take from its own
row only; any other key's from its owner's row and, when the key is limited, its own. Until
then balances stay where they are (``accounts.User.quota``, ``used_quota``,
``request_count``; ``accounts.ApiKey.remaining_quota``, ``used_quota``, ``last_used_at``),
guarded by ``accounts.models.KeepsMoneyFields``. Why move, rather than give ``ApiKey`` a
"carved" flag and keep the columns:

- A carved sub-key is money a reseller handed to a customer, not a limit on the reseller's
  own balance. As a billing row it is a balance like any other (held, settled and reconciled
  the same way, and protected from deletion while it holds money); as a column of a key it is
  money that vanishes, with no ledger row, when someone deletes the key.
- Identity flows move money: sign-up grants trial credit, an invite earns a reward, a key is
  made with an allowance, a reseller carves a sub-key. With balances in billing's tables,
  accounts calls billing and billing needs nothing from accounts: the dependency runs one
  way. With balances on accounts' rows, billing writes accounts' columns while accounts calls
  billing: the cycle issue 7 removes.
- The hot path keeps its shape and gets lighter: a batch still locks one row per user and one
  per key, found by the ids the relay already holds, but rewrites a narrow row instead of the
  whole user row (password hash, names, email) on every call, and its row locks no longer
  wait on, or hold up, a login or an admin save of the same user.
- ``KeepsMoneyFields`` exists only because money sits in rows other code saves; it goes.

Carved sub-keys (issue 9) arrived before the move, and take the other road for now: a key
carries ``carved`` (set at creation, never changed) and its balance in ``remaining_quota``.
Why that is safe until the move: the deletion hole above is closed where it would happen (a
carved key refuses ``delete()`` and queryset deletes, admin offers no delete, the site and the
API revoke instead, and revoking returns the balance through the ledger), and every movement
in or out is a pair of ledger rows (billing.subkeys). The batch reads the flag in the same
locked read as the balance (billing.batch ``KEY_LOCK_COLUMN``), so the hot path pays nothing
for it. When balances move, ``carved`` moves with the key's row.

What the decision requires now is the arrow, and it is in place: accounts imports billing (a
new key's allowance goes through ``billing.services``), billing imports nothing from accounts.
billing reaches today's balance columns through its own foreign keys, below; the move changes
this module, the batch's statements (billing.batch) and the services and reads that name
those columns (grant, set_key_limit, spent_limit, reconcile), nothing outside billing but
the tests and admin that read balances off users and keys.
"""

from typing import TYPE_CHECKING

from billing.models import Hold

if TYPE_CHECKING:  # what the type checker sees; at run time, the models billing's keys point at
    from accounts.models import ApiKey, User
else:
    User = Hold._meta.get_field("user").related_model
    ApiKey = Hold._meta.get_field("api_key").related_model

USER_TABLE: str = User._meta.db_table  # quota, used_quota, request_count
KEY_TABLE: str = ApiKey._meta.db_table  # remaining_quota, used_quota, last_used_at, carved

"""Table definitions. The naming convention keeps constraint names stable across databases."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from s25rbl.lists.values import EntryKind, EntrySource, ListName

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The tables, with constraint names that stay the same on every database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as plain strings with a CHECK constraint, so PostgreSQL needs no enum type.
    return Enum(cls, name=name, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Entry(Base):
    """One list entry. ``value`` is stored canonical (lower-case names, compressed networks)."""

    __tablename__ = "entries"
    __table_args__ = (
        UniqueConstraint("list", "kind", "value"),
        Index("ix_entries_list_kind", "list", "kind"),
        Index("ix_entries_list_id", "list", "id"),
        Index("ix_entries_source_id", "source", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    list: Mapped[ListName] = mapped_column(_enum(ListName, "list_name"))
    kind: Mapped[EntryKind] = mapped_column(_enum(EntryKind, "entry_kind"))
    value: Mapped[str] = mapped_column(String(512))
    reason: Mapped[str] = mapped_column(String(255), default="")
    source: Mapped[EntrySource] = mapped_column(_enum(EntrySource, "entry_source"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128), default="")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    hit_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hit_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The s25rbl release whose starter whitelist added it (source ``builtin`` only).
    starter_release: Mapped[str | None] = mapped_column(String(16), nullable=True)


class StarterOffer(Base):
    """A starter whitelist domain this store has been offered, once and for good.

    An entry is offered when the first s25rbl release that ships it starts on the store; an
    operator's later removal of it therefore sticks through every upgrade. ``outcome``: ``added``,
    ``present`` (the operator had the domain already, white or black) or ``earlier`` (loaded
    before offers were recorded, by s25rbl 0.1.0).
    """

    __tablename__ = "starter_offers"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    release: Mapped[str] = mapped_column(String(16))
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(16))


class ListVersion(Base):
    """A single row counting list changes; nodes poll it and reload their indexes when it moves.

    Polling a counter (rather than relying on notifications alone) means a node that was down
    or missed a message still converges on its next poll.
    """

    __tablename__ = "list_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Meta(Base):
    """Small facts about this database (s25rbl 0.1.0 marked here that it loaded its starter list)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Token(Base):
    """An API bearer token. Only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(64))  # comma-separated, e.g. "read,write"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditEvent(Base):
    """Who changed what, when: one row per write through the API or the CLI."""

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_action_id", "action", "id"),
        Index("ix_audit_action_at", "action", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(512), default="")
    detail: Mapped[str] = mapped_column(String(2000), default="")


class Report(Base):
    """One temporary rejection an MTA saw, as reported; the raw material of learning.

    What the reporter claims (``reported_at``, ``client_name``, ``helo``) is evidence only;
    learning goes by what s25rbl saw itself: ``received_at``, the ``code`` it answered for the
    address then, and its own ``confirmed_name`` (product §5).
    """

    __tablename__ = "reports"
    __table_args__ = (
        Index("ix_reports_triplet", "client_ip", "sender_norm", "recipient", "received_at"),
        Index("ix_reports_pool", "sender_norm", "recipient", "pool_domain", "received_at"),
        Index("ix_reports_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())  # claimed by the reporter
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())  # when s25rbl took it
    reporter: Mapped[str] = mapped_column(String(128))
    client_ip: Mapped[str] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(255))
    helo: Mapped[str] = mapped_column(String(255))
    sender: Mapped[str] = mapped_column(String(512))
    sender_norm: Mapped[str] = mapped_column(String(512))
    recipient: Mapped[str] = mapped_column(String(512))
    # An attempt that counts towards learning: listed (.2, .4) on arrival, not revoked since.
    counts: Mapped[bool] = mapped_column(Boolean, default=False)
    code: Mapped[int] = mapped_column(Integer, default=0)  # s25rbl's blocklist code on arrival
    confirmed_name: Mapped[str] = mapped_column(String(255), default="")
    pool_domain: Mapped[str] = mapped_column(String(255), default="")  # confirmed_name's registrable domain


class LearnBlock(Base):
    """An address the operator forbade learning again."""

    __tablename__ = "learn_blocks"

    ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128), default="")


class Suggestion(Base):
    """A provider's pool seen retrying from several addresses: a domain whitelist to approve."""

    __tablename__ = "suggestions"
    __table_args__ = (UniqueConstraint("domain"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open, approved, rejected
    evidence: Mapped[str] = mapped_column(String(8000), default="[]")  # JSON: addresses, names, pairs
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    entry_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


# --- the policy service's state (product §7) -----------------------------------------------


class GreylistTriplet(Base):
    """A greylisted (client network, normalised sender, recipient), created once by whichever
    node saw it first (``key`` is unique: a digest of the three, so two nodes agree)."""

    __tablename__ = "policy_triplets"
    __table_args__ = (
        UniqueConstraint("key"),
        Index("ix_policy_triplets_network", "network"),
        Index("ix_policy_triplets_first_seen", "first_seen"),
        Index("ix_policy_triplets_last_seen", "last_seen"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(32))
    network: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(512))
    recipient: Mapped[str] = mapped_column(String(512))
    client_ip: Mapped[str] = mapped_column(String(64))  # the address of the first attempt
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    passed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TarpitRecord(Base):
    """One SMTP session (``instance``) of a listed client that was tarpitted: whether it reached
    DATA (survived) and sent its message (delivered), or hung up."""

    __tablename__ = "policy_tarpits"
    __table_args__ = (
        UniqueConstraint("client_ip", "instance"),
        Index("ix_policy_tarpits_client", "client_ip", "started_at"),
        Index("ix_policy_tarpits_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_ip: Mapped[str] = mapped_column(String(64))
    instance: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    survived_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    client_name: Mapped[str] = mapped_column(String(255), default="")
    sender: Mapped[str] = mapped_column(String(512), default="")
    recipient: Mapped[str] = mapped_column(String(512), default="")
    mta: Mapped[str] = mapped_column(String(64), default="")  # the policy client that asked


class PolicyPass(Base):
    """A pass the policy service saw (a tarpit survived, a greylisted triplet retried): evidence,
    and what learning counts. One per SMTP session at most (unique client and instance);
    ``learned_at`` marks the passes a learning used up, so a revoked address starts afresh."""

    __tablename__ = "policy_passes"
    __table_args__ = (
        UniqueConstraint("client_ip", "instance"),
        Index("ix_policy_passes_client", "client_ip", "at"),
        Index("ix_policy_passes_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_ip: Mapped[str] = mapped_column(String(64))
    instance: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # tarpit, greylist
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    client_name: Mapped[str] = mapped_column(String(255), default="")
    helo: Mapped[str] = mapped_column(String(255), default="")
    sender: Mapped[str] = mapped_column(String(512), default="")
    recipient: Mapped[str] = mapped_column(String(512), default="")
    learned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

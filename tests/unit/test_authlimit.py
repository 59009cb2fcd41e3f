"""Failed proxy logins are limited per (address, user name), per address and overall, so an
attacker cannot lock out the people who share its address; tokens compare in constant time."""

from aibridge.access.actors import ActorDirectory, token_digest
from aibridge.access.failure_limit import AuthFailureLimiter, FailurePolicy
from aibridge.intercept import Actor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **policy) -> AuthFailureLimiter:
    return AuthFailureLimiter(FailurePolicy(**{"window": 60, **policy}), clock=clock)


def test_a_user_name_is_refused_after_its_limit_until_the_window_passes():
    clock = Clock()
    limit = limiter(clock, per_user=3)
    assert [limit.failed("10.0.0.1", "mallory") for _ in range(3)] == [[], [], ["user"]]
    assert limit.refused("10.0.0.1", "mallory") == "user"
    assert limit.refused("10.0.0.1", "alice") is None  # same address, other name
    assert limit.refused("10.0.0.2", "mallory") is None  # same name, other address
    clock.now = 119.9  # the previous window still weighs a little
    assert limit.refused("10.0.0.1", "mallory") is None


def test_the_window_slides_instead_of_resetting_at_its_edge():
    clock = Clock()
    limit = limiter(clock, per_user=4)
    clock.now = 50
    for _ in range(4):
        limit.failed("a", "u")
    clock.now = 62  # a fixed window would have forgotten all four
    limit.failed("a", "u")
    assert limit.refused("a", "u") == "user"  # 4 x 58/60 + 1
    clock.now = 90  # half of the previous window still overlaps: 4 x 1/2 + 1
    assert limit.refused("a", "u") is None


def test_a_success_clears_only_its_own_name_and_refused_attempts_do_not_count():
    clock = Clock()
    limit = limiter(clock, per_user=2)
    for name in ("alice", "mallory"):
        limit.failed("nat", name)
    limit.succeeded("nat", "alice")
    limit.failed("nat", "alice")
    assert limit.refused("nat", "alice") is None  # its count started again at the success
    limit.failed("nat", "mallory")
    assert limit.refused("nat", "mallory") == "user"  # alice's success did not reset it


def test_many_names_from_one_address_lock_the_address_except_known_logins():
    clock = Clock()
    limit = limiter(clock, per_user=10, per_address=5)
    limit.succeeded("nat", "alice")  # logged in before
    reached = [limit.failed("nat", f"name-{i}") for i in range(5)]
    assert reached[-1] == ["address"] and not any(reached[:-1])
    assert limit.refused("nat", "newcomer") == "address"
    assert limit.refused("nat", "alice") is None
    assert limit.refused("elsewhere", "newcomer") is None


def test_a_known_login_is_forgotten_after_its_ttl():
    clock = Clock()
    limit = limiter(clock, per_address=1, known_ttl=100)
    limit.succeeded("nat", "alice")
    clock.now = 101
    limit.failed("nat", "x")
    assert limit.refused("nat", "alice") == "address"


def test_a_global_flood_refuses_only_pairs_that_never_logged_in():
    clock = Clock()
    limit = limiter(clock, per_user=10, per_address=10, global_limit=6)
    limit.succeeded("10.0.0.9", "alice")
    for i in range(6):
        limit.failed(f"10.0.1.{i}", "x")
    assert limit.refused("10.0.2.1", "bob") == "global"
    assert limit.refused("10.0.0.9", "alice") is None
    assert limit.refused("10.0.0.10", "alice") == "global"  # known means from that address


def test_new_limits_keep_the_counts():
    clock = Clock()
    limit = limiter(clock, per_user=10)
    for _ in range(3):
        limit.failed("a", "u")
    limit.configure(FailurePolicy(per_user=3, window=60))
    assert limit.refused("a", "u") == "user"


def test_memory_is_bounded():
    limit = AuthFailureLimiter(max_keys=3, clock=Clock())
    for address in "abcdef":
        limit.failed(address, "u")
        limit.succeeded(address, "v")
    assert len(limit._pairs) == 3 and len(limit._addresses) == 3 and len(limit._known) == 3


def test_directory_authenticates_by_digest():
    alice = Actor(id="alice")
    directory = ActorDirectory({token_digest("secret"): alice}, None)
    assert directory.authenticate("secret") is alice
    assert directory.authenticate("secreT") is None
    assert directory.authenticate("") is None
    assert directory.by_token_digest(token_digest("secret")) is alice
    assert directory.by_token_digest(None) is None

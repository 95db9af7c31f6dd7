#!/usr/bin/env python3
"""Fleet cache simulation: renders and hit ratios of N imgedge nodes behind a round-robin
load balancer, over a Zipf request mix, with and without owner routing.

Models, per node, one LRU memory tier of `--cache` objects (the disk tier is left out: it
only raises every row by the same amount). Modes:

  independent  every node renders its own misses (today's fleet without `fleet:`)
  owner        a node that misses asks the key's owner (rendezvous hashing); the owner
               renders on its own miss; the requester keeps the answer in its LRU
  owner+l2     as `owner`, plus a shared derivative store that keeps every render, so a
               key is rendered at most once in the whole run

Prints one Markdown table. Deterministic for a given --seed.

    scripts/fleet-sim.py --keys 200000 --requests 1000000 --cache 20000 --zipf 0.9
"""

import argparse
import bisect
import hashlib
import random
from collections import OrderedDict


class Lru:
    def __init__(self, capacity):
        self.capacity = capacity
        self.items = OrderedDict()

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
            return True
        return False

    def put(self, key):
        self.items[key] = None
        self.items.move_to_end(key)
        if len(self.items) > self.capacity:
            self.items.popitem(last=False)


def zipf_sampler(n, s, rng):
    """Inverse-CDF sampler over ranks 0..n-1 with P(k) ~ 1/(k+1)^s."""
    weights = [1.0 / (k + 1) ** s for k in range(n)]
    total = sum(weights)
    cdf, acc = [], 0.0
    for w in weights:
        acc += w / total
        cdf.append(acc)
    return lambda: min(bisect.bisect_left(cdf, rng.random()), n - 1)


def owner_of(key, nodes):
    """Rendezvous (highest random weight) hashing: a node's departure moves only its keys."""
    best, best_w = 0, -1
    for node in range(nodes):
        w = int.from_bytes(hashlib.blake2b(f"{node}:{key}".encode(), digest_size=8).digest(), "big")
        if w > best_w:
            best, best_w = node, w
    return best


def run(mode, nodes, args, requests):
    caches = [Lru(args.cache) for _ in range(nodes)]
    shared = set()
    owners = {}
    renders = local_hits = hops = 0
    for i, key in enumerate(requests):
        node = i % nodes  # round robin
        if caches[node].get(key):
            local_hits += 1
            continue
        if mode == "independent" or nodes == 1:
            renders += 1
            caches[node].put(key)
            continue
        owner = owners.get(key)
        if owner is None:
            owner = owners[key] = owner_of(key, nodes)
        if owner != node:
            hops += 1
            if not caches[owner].get(key):
                if mode == "owner+l2" and key in shared:
                    pass
                else:
                    renders += 1
                    shared.add(key)
                caches[owner].put(key)
            caches[node].put(key)
        else:
            if not (mode == "owner+l2" and key in shared):
                renders += 1
                shared.add(key)
            caches[node].put(key)
    n = len(requests)
    return renders / n, local_hits / n, hops / n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=200_000, help="distinct transforms")
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--cache", type=int, default=20_000, help="objects per node's memory tier")
    p.add_argument("--zipf", type=float, default=0.9, help="Zipf exponent of the request mix")
    p.add_argument("--nodes", default="1,2,4,8,16")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    sample = zipf_sampler(args.keys, args.zipf, rng)
    # a random permutation, so popularity is not correlated with the key's hash
    perm = list(range(args.keys))
    rng.shuffle(perm)
    requests = [perm[sample()] for _ in range(args.requests)]
    distinct = len(set(requests))
    print(
        f"{args.requests} requests over {args.keys} transforms (Zipf {args.zipf}, {distinct} requested), "
        f"{args.cache} objects per node\n"
    )
    print("| nodes | mode | renders per request | fleet hit ratio | local hit ratio | peer hops per request |")
    print("|---:|---|---:|---:|---:|---:|")
    for nodes in [int(x) for x in args.nodes.split(",")]:
        for mode in ("independent", "owner", "owner+l2"):
            if nodes == 1 and mode != "independent":
                continue
            renders, local, hops = run(mode, nodes, args, requests)
            print(f"| {nodes} | {mode} | {renders:.4f} | {1 - renders:.4f} | {local:.4f} | {hops:.4f} |")
    print(f"\nlower bound (each requested transform rendered once): {distinct / args.requests:.4f} renders per request")


if __name__ == "__main__":
    main()

package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// This file is the optional verified-token cache (Config.CacheSize).
//
// It maps the SHA-256 of a token that verified to its claims, so that a
// client presenting the same token on every request pays for one signature
// check. Invariants:
//   - only tokens whose signature verified and whose claims validated are
//     stored; a hit still runs every claim check with the caller's clock;
//   - an entry is never returned at or past the token's exp plus leeway;
//   - at most max entries; a full cache drops expired entries it meets,
//     then an arbitrary one (Go's map iteration starts at a random place);
//   - one cache per Verifier, so a reload, which may change the keys,
//     starts empty.

type cacheKey [sha256.Size]byte

func cacheKeyOf(token string) cacheKey { return sha256.Sum256([]byte(token)) }

type cacheEntry struct {
	claims *Claims
	until  time.Time // exp + leeway
}

type tokenCache struct {
	mu  sync.Mutex
	max int
	m   map[cacheKey]cacheEntry
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{max: size, m: make(map[cacheKey]cacheEntry, size)}
}

func (c *tokenCache) get(k cacheKey, now time.Time) *Claims {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil
	}
	if !now.Before(e.until) {
		delete(c.m, k)
		return nil
	}
	return e.claims
}

// evictScan bounds the work one put does looking for expired entries.
const evictScan = 8

func (c *tokenCache) put(k cacheKey, claims *Claims, now time.Time, leeway time.Duration) {
	until := claims.ExpiresAt().Add(leeway)
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		seen := 0
		for key, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, key)
			}
			if seen++; seen == evictScan {
				break
			}
		}
		for key := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, key)
		}
	}
	c.m[k] = cacheEntry{claims: claims, until: until}
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

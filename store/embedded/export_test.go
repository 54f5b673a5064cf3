package embedded

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sweep runs one sweep as the background sweeper would at now.
func (s *Store) Sweep(now time.Time) (int, error) { return s.sweep(now) }

// Counts returns the number of keys in each bucket.
func (s *Store) Counts() (bindings, tokens, expiry int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		bindings = tx.Bucket(bucketBindings).Stats().KeyN
		tokens = tx.Bucket(bucketTokens).Stats().KeyN
		expiry = tx.Bucket(bucketExpiry).Stats().KeyN
		return nil
	})
	return
}

// HeldCounts returns the number of keys in the held-call and node buckets.
func (s *Store) HeldCounts() (held, heldExpiry, nodes int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		held = tx.Bucket(bucketHeld).Stats().KeyN
		heldExpiry = tx.Bucket(bucketHeldExpiry).Stats().KeyN
		nodes = tx.Bucket(bucketNodes).Stats().KeyN
		return nil
	})
	return
}

// MessageCounts returns the number of keys in the message, message index
// and lease buckets.
func (s *Store) MessageCounts() (messages, byAOR, arrival, expiry, leases int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		messages = tx.Bucket(bucketMessages).Stats().KeyN
		byAOR = tx.Bucket(bucketMsgAOR).Stats().KeyN
		arrival = tx.Bucket(bucketMsgArrival).Stats().KeyN
		expiry = tx.Bucket(bucketMsgExpiry).Stats().KeyN
		leases = tx.Bucket(bucketLeases).Stats().KeyN
		return nil
	})
	return
}

// NoSync reports whether bbolt skips the fsync of each commit.
func (s *Store) NoSync() bool { return s.db.NoSync }

// RegistrationCounts returns the number of keys in the registration,
// schedule, AOR index, state count and account buckets.
func (s *Store) RegistrationCounts() (regs, due, byAOR, states, accounts int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		regs = tx.Bucket(bucketRegs).Stats().KeyN
		due = tx.Bucket(bucketRegDue).Stats().KeyN
		byAOR = tx.Bucket(bucketRegAOR).Stats().KeyN
		states = tx.Bucket(bucketRegStates).Stats().KeyN
		accounts = tx.Bucket(bucketAccounts).Stats().KeyN
		return nil
	})
	return
}

-- Settlement's scan kept to payments with money still to move (issue 19). A payment captured
-- for a delivered order is done for good: it is marked settled, and the partial index that
-- settlement reads leaves it out, so a round costs what is open, not every order ever paid.
ALTER TABLE payments ADD COLUMN settled BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE payments SET settled = TRUE
    WHERE status = 'captured' AND order_id IN (SELECT id FROM orders WHERE status = 'delivered');
DROP INDEX payments_to_settle;
CREATE INDEX payments_to_settle ON payments (updated_at)
    WHERE status IN ('authorised', 'captured') AND NOT settled;

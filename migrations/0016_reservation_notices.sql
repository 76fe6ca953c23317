-- Notices (POST /v1/reservations/notices): a request of a governed scope
-- that the gateway admitted from memory (its scope was not watched yet) is
-- reported on the filter's next tick and held here as a reservation of its
-- cost bound, rule `noticed`, until its usage record lands or it expires.
-- Deny and watch decisions then count requests in flight, not only the
-- ones whose records have landed.
ALTER TABLE budget_reservations DROP CONSTRAINT budget_reservations_rule_check;
ALTER TABLE budget_reservations ADD CONSTRAINT budget_reservations_rule_check
    CHECK (rule IN ('fits', 'one_over', 'noticed'));

-- Whose payment it is (the customer's account id, as orders names it): a customer reads only
-- their own payments. Payments from before have none and are for admins and services only.
ALTER TABLE payments ADD COLUMN customer TEXT;

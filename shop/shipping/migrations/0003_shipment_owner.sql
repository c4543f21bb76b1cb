-- Whose shipment it is (the customer's account id, as orders names it): a customer reads only
-- their own shipments. Shipments from before have none and are for admins and services only.
ALTER TABLE shipments ADD COLUMN customer TEXT;

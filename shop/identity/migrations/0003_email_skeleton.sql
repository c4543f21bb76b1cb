-- What an address looks like to a person (UTS #39 skeleton of its normalized form): two
-- addresses that look alike share one, and only one account may have it. Filled by identity
-- at start for accounts from before (left empty where an older account already has it).
ALTER TABLE accounts ADD COLUMN email_skeleton TEXT;
CREATE UNIQUE INDEX accounts_one_per_skeleton ON accounts (email_skeleton);

-- A machine registered with a bootstrap token and the SMBIOS UUID of a machine already known
-- in the account is a new machine; `duplicate_of` names the one it may replace (issue 11).
ALTER TABLE machines ADD COLUMN duplicate_of TEXT;

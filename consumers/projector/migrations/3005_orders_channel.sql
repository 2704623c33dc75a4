-- OrderPlaced v2 says where the order came from; v1 events leave it null.
ALTER TABLE read_model.orders ADD COLUMN channel text;

-- The databases of the services that own one (as deploy/local/infra.sh makes them locally),
-- run once by the postgres image on its first start.
CREATE DATABASE orders_write;
CREATE DATABASE orders_read;
CREATE DATABASE order_processor;

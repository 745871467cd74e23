module memstate/kit

go 1.19

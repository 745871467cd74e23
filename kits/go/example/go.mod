module mlp

go 1.19

require memstate/kit v0.0.0

replace memstate/kit => ../

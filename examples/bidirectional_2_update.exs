# Bidirectional flow, step 2 (Elixir): additional processing updates the array
# in place. It doubles rows 100..199 and records the stage.
{:ok, array} = ZarrBridge.open(storage: :filesystem, path: "/shared/data/pipeline", mode: :"r+")

{:ok, nd} = ZarrBridge.Array.read(array, start: {100, 0}, stop: {200, 300})
doubled = for <<x::float-little-64 <- nd.data>>, into: <<>>, do: <<x * 2::float-little-64>>
:ok = ZarrBridge.Array.write(array, %{nd | data: doubled}, start: {100, 0})

:ok = ZarrBridge.Array.update_attributes(array, %{"stage" => "elixir-updated"})
IO.puts("Elixir doubled rows 100..199 of #{inspect(array.metadata.shape)}")

defmodule ZarrBridge.SelectionTest do
  # The `start:`, `stop:` and `step:` options of read/2, get_slice/2,
  # write/3 and set_slice/3, against the real default sidecar: every bad
  # form is an :invalid_selection error naming the option, the axis and the
  # value (never an exception from inside the client), and `nil` entries
  # select as Python's slices do.
  use ExUnit.Case, async: true

  alias ZarrBridge.{Array, Error, NDArray}

  # 5 x 7 int32, element (i, j) = 7 * i + j.
  setup do
    dir = Path.join(System.tmp_dir!(), "zb-selection-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)

    {:ok, array} =
      ZarrBridge.create(path: Path.join(dir, "a"), shape: {5, 7}, chunks: {2, 3}, dtype: :int32)

    :ok = Array.write(array, NDArray.from_list!(Enum.to_list(0..34), {5, 7}, :int32))
    %{array: array}
  end

  defp rows(rows, cols), do: for(i <- rows, do: for(j <- cols, do: 7 * i + j))

  defp nested(list), do: list |> Enum.map(&List.to_tuple/1) |> List.to_tuple()

  @bad [
    # {option, value, axis named in the message (nil: the whole option)}
    {:stop, {4, :end}, 1},
    {:stop, {4.0, 7}, 0},
    {:stop, {4, 7.5}, 1},
    {:stop, {4, -1}, 1},
    {:stop, {4, "7"}, 1},
    {:stop, {4, [7]}, 1},
    {:start, {:end, 0}, 0},
    {:start, {0, 1.0}, 1},
    {:start, {-1, 0}, 0},
    {:start, {0, :"0"}, 1},
    {:step, {1, 0}, 1},
    {:step, {0, 1}, 0},
    {:step, {1, -2}, 1},
    {:step, {1.0, 1}, 0},
    {:step, {:all, 1}, 0},
    {:start, {0}, nil},
    {:start, {0, 0, 0}, nil},
    {:stop, {}, nil},
    {:step, {1, 1, 1}, nil},
    {:start, [0, 0], nil},
    {:stop, [4, 7], nil},
    {:step, [1, 1], nil},
    {:stop, 4, nil},
    {:start, :origin, nil},
    {:step, %{0 => 1}, nil}
  ]

  describe "bad forms" do
    test "read/2 and get_slice/2 answer :invalid_selection naming option, axis and value",
         %{array: array} do
      for {option, value, axis} <- @bad do
        opts = [{option, value}]

        for fun <- [&Array.read/2, &Array.get_slice/2] do
          assert {:error, %Error{code: :invalid_selection, message: message, details: details}} =
                   fun.(array, opts),
                 inspect(opts)

          assert message =~ "#{option}:", message
          assert details.option == option

          if axis do
            assert message =~ "axis #{axis} is #{inspect(elem(value, axis))}", message
            assert details.axis == axis
            assert details.value == elem(value, axis)
          else
            assert message =~ inspect(value), message
            assert details.value == value
          end
        end
      end
    end

    test "bang variants raise the same error", %{array: array} do
      for {option, value, _axis} <- @bad do
        error = assert_raise Error, fn -> Array.read!(array, [{option, value}]) end
        assert error.code == :invalid_selection
        assert error.message =~ "#{option}:"
        error = assert_raise Error, fn -> Array.get_slice!(array, [{option, value}]) end
        assert error.code == :invalid_selection
      end
    end

    test "write/3 and set_slice/3 refuse bad start and stop the same way", %{array: array} do
      nd = NDArray.from_list!([1, 2], {1, 2}, :int32)

      for {option, value, _axis} <- @bad, option != :step do
        opts = [{option, value}]

        for result <- [
              Array.write(array, nd, opts),
              Array.write(array, <<0::32-little, 0::32-little>>, opts),
              Array.set_slice(array, {{1, 2}}, opts)
            ] do
          assert {:error, %Error{code: :invalid_selection, message: message}} = result,
                 inspect(opts)

          assert message =~ "#{option}:"
        end

        assert_raise Error, fn -> Array.set_slice!(array, {{1, 2}}, opts) end
        assert_raise Error, fn -> Array.write!(array, nd, opts) end
      end

      # nothing was written by any of them
      assert Array.get_slice(array) == {:ok, nested(rows(0..4, 0..6))}
    end

    test "data of another rank than the array is :invalid_selection", %{array: array} do
      assert {:error, %Error{code: :invalid_selection, message: message}} =
               Array.set_slice(array, {1, 2}, start: {0, 0})

      assert message =~ "rank 1"
      assert {:error, %Error{code: :invalid_selection}} = Array.set_slice(array, {1, 2})
    end

    test "the sidecar still serves after them", %{array: array} do
      for {option, value, _axis} <- @bad, do: Array.read(array, [{option, value}])
      assert {:ok, {{10, 11}}} = Array.get_slice(array, start: {1, 3}, stop: {2, 5})
    end
  end

  describe "nil entries" do
    test "nil in stop is the end of that axis, nil in start is 0", %{array: array} do
      assert Array.get_slice(array, start: {3, 0}, stop: {4, nil}) ==
               {:ok, nested(rows(3..3, 0..6))}

      assert Array.get_slice(array, start: {nil, 0}, stop: {2, 3}) ==
               {:ok, nested(rows(0..1, 0..2))}

      assert Array.get_slice(array, start: {2, nil}, stop: {nil, 4}) ==
               {:ok, nested(rows(2..4, 0..3))}

      assert Array.get_slice(array, start: {nil, nil}, stop: {nil, nil}) ==
               {:ok, nested(rows(0..4, 0..6))}

      assert {:ok, %NDArray{shape: {1, 7}, data: data}} =
               Array.read(array, start: {3, nil}, stop: {4, nil})

      assert data ==
               for(v <- rows(3..3, 0..6) |> List.flatten(), into: <<>>, do: <<v::32-little>>)
    end

    test "nil in step is 1", %{array: array} do
      assert Array.get_slice(array, step: {2, nil}) ==
               {:ok, nested(rows([0, 2, 4], 0..6))}

      assert Array.get_slice(array, start: {1, nil}, stop: {nil, 7}, step: {nil, 3}) ==
               {:ok, nested(rows(1..4, [0, 3, 6]))}
    end

    test "writes: nil in start is 0, nil in stop the end", %{array: array} do
      :ok = Array.set_slice(array, {{-1, -2, -3}}, start: {4, 4}, stop: {5, nil})
      assert Array.get_slice(array, start: {4, 3}) == {:ok, {{31, -1, -2, -3}}}

      :ok =
        Array.write(array, NDArray.from_list!([-7, -8], {2, 1}, :int32),
          start: {nil, 6},
          stop: {2, nil}
        )

      assert Array.get_slice(array, start: {0, 6}, stop: {2, 7}) == {:ok, {{-7}, {-8}}}

      :ok = Array.write(array, <<-9::32-little, -10::32-little>>, start: {3, 5}, stop: {4, nil})
      assert Array.get_slice(array, start: {3, 5}, stop: {4, nil}) == {:ok, {{-9, -10}}}

      # stop's nil is the end, so data that does not reach it does not fit
      assert {:error, %Error{code: :data_size_mismatch}} =
               Array.set_slice(array, {{1, 2}}, start: {0, 0}, stop: {1, nil})
    end
  end
end
